# TEMPORARY probe: test 7 many times in one process, timing stop().
import pytest
from tests.faults import test_compute_faults as t


@pytest.mark.parametrize("i", range(25))
def test_repeat(tmp_path, i):
    t.test_task_failing_always_fails_job_after_four_attempts(tmp_path)
