"""The bad-input hang guard counts this process's CPU time, so a loaded machine cannot fail it."""

import time

import pytest
from bad_inputs import HANG_LIMIT_CPU_S, assert_defined_outcome

from backtrack_gym.envs.countdown import CountDownEnv

PROBLEM = {"numbers": [3, 5, 7, 8], "target": 24}


class WaitingEnv(CountDownEnv):
    """A step that waits or computes first: waiting stands for other jobs taking the cores."""

    def __init__(self, wait_s: float = 0.0, spin_s: float = 0.0):
        super().__init__(backtrack=True)
        self.wait_s, self.spin_s = wait_s, spin_s

    def step(self, action):
        time.sleep(self.wait_s)
        end = time.process_time() + self.spin_s
        while time.process_time() < end:
            pass
        return super().step(action)


def test_a_step_slowed_by_other_jobs_passes():
    env = WaitingEnv(wait_s=0.3)
    env.reset(options={"problem": PROBLEM})
    assert assert_defined_outcome(env, "5 * 8 = 40")["last_valid"]


def test_a_step_that_hangs_fails():
    env = WaitingEnv(spin_s=HANG_LIMIT_CPU_S + 0.2)
    env.reset(options={"problem": PROBLEM})
    with pytest.raises(AssertionError, match="CPU seconds"):
        assert_defined_outcome(env, "5 * 8 = 40")
