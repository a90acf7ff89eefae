"""backtrack-gym: Gymnasium text environments for reasoning with search and backtracking."""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

ENV_IDS = {
    "backtrack_gym/CountDown-v0": "backtrack_gym.envs.countdown.env:CountDownEnv",
    "backtrack_gym/Math-v0": "backtrack_gym.envs.math.env:MathEnv",
    "backtrack_gym/Sudoku-v0": "backtrack_gym.envs.sudoku.env:SudokuEnv",
    "backtrack_gym/SudokuGrid-v0": "backtrack_gym.envs.sudoku.structured:SudokuGridEnv",
}

for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point)
