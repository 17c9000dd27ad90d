"""Ray's machine-wide discovery file, ``ray_current_cluster`` in Ray's default temp dir.

``ray start`` writes its head's address into its temp dir, and every ``ray.init()`` without an
address on the machine follows the file in Ray's default one (``/tmp/ray``): to a running head
(even another user's), or, once that head is stopped, into an error ("When connecting to an
existing cluster, num_cpus and num_gpus must not be provided"). The heads this project starts use
a private temp dir (:func:`contavsep_platform.settings.private_ray_temp_dir`), so they never
write it; a head that did (started by an older version, or with ``--ray-temp-dir /tmp/ray``)
has the file removed by ``services down``, where it still names that head.
"""

from __future__ import annotations

from pathlib import Path


def shared_discovery_file() -> Path:
    """Where a plain ``ray.init()`` looks for a running head."""
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(None))


def forget_head(address: str) -> bool:
    """Remove the shared discovery file if it names ``address`` (host:port of a head this
    project stopped); a file naming any other head is left alone. Returns whether it went."""
    path = shared_discovery_file()
    try:
        named = path.read_text().strip()
    except OSError:
        return False
    if named != address:
        return False
    path.unlink(missing_ok=True)
    return True
