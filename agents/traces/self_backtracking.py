"""What the self-backtracking trace styles share: the paper's data mix and its options.

Yang et al. 2025 ("Step Back to Leap Forward") train on ``D = D_op ∪ D_back``: optimal
paths, and back examples ``prefix(y) ∘ a_err ∘ <backtrack>`` (a prefix of an optimal
path, one erroneous step, the backtrack token), the erroneous step masked from the loss
(LAMDASZ-ML/Self-Backtracking ``src/train.py``). Each task's ``self_backtrack`` style
writes one or the other per trace, drawn from the trace's own random stream, so a data
set of ``n`` rows holds about ``wrong_step_rate * n`` back examples.
"""

from __future__ import annotations

EXAMPLE_FORMS = ("ended", "continued")
"""Where a back example ends: at its ``<backtrack>`` line (the paper's), or the solution goes on."""


def check_self_backtrack_options(wrong_step_rate: float, example_form: str) -> None:
    """Raise ``ValueError`` naming the option unless ``wrong_step_rate`` is in [0, 1] and
    ``example_form`` one of :data:`EXAMPLE_FORMS`."""
    if isinstance(wrong_step_rate, bool) or not isinstance(wrong_step_rate, (int, float)):
        raise ValueError(f"wrong_step_rate must be a number in [0, 1], got {wrong_step_rate!r}")
    if not 0.0 <= wrong_step_rate <= 1.0:
        raise ValueError(f"wrong_step_rate must be in [0, 1], got {wrong_step_rate}")
    if example_form not in EXAMPLE_FORMS:
        raise ValueError(f"example_form must be one of {EXAMPLE_FORMS}, got {example_form!r}")
