"""Loss terms summed on the device: means, and the non-finite check's message."""

import math

import pytest
import torch

from contavsep.loss_log import LossLog


def test_means_sum_every_iteration_and_terms_that_come_and_go():
    log = LossLog(torch.device("cpu"))
    log.add(0, {"main": torch.tensor(1.0), "total": torch.tensor(1.0)})
    log.add(1, {"main": torch.tensor(3.0, dtype=torch.bfloat16), "dist": torch.tensor(2.0), "total": torch.tensor(5.0)})
    log.check("step 0", "0..1")  # all finite: no error
    assert log.means(2) == {"main": 2.0, "total": 3.0, "dist": 1.0}


def test_a_non_finite_term_is_reported_with_its_first_iteration_and_every_value():
    log = LossLog(torch.device("cpu"))
    for it in range(6):
        dist = torch.tensor(math.nan if it in (3, 5) else 0.5)
        log.add(it, {"main": torch.tensor(0.25), "dist": dist, "total": 0.25 + dist})
    with pytest.raises(FloatingPointError) as err:
        log.check("step 2", "2..5")
    message = str(err.value)
    assert "step 2: non-finite loss at iteration 3 (checked over iterations 2..5)" in message
    assert "main 0.25, dist nan, total nan" in message and "non-finite: dist, total" in message
