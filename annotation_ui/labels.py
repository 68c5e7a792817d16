"""The label vocabulary (paper App. B.2): seven expressions, three intensities, and the keyboard map."""

from __future__ import annotations

from hfl.labels import EXPRESSIONS, INTENSITIES  # the paper's label set; intensities ordinal, weakest first

__all__ = ["EXPRESSIONS", "INTENSITIES"]
NO_INTENSITY: frozenset[str] = frozenset({"neutral"})  # a neutral face takes no intensity

# Keyboard map shown on the labelling page (keys are KeyboardEvent.key values, lower-cased).
EXPRESSION_KEYS: dict[str, str] = {str(i + 1): e for i, e in enumerate(EXPRESSIONS)}
INTENSITY_KEYS: dict[str, str] = {"q": "slightly", "w": "normally", "e": "strongly"}
ACTION_KEYS: dict[str, str] = {"enter": "submit", "x": "skip", "z": "undo last", "?": "guidelines"}

ROLES: tuple[str, ...] = ("admin", "annotator")
MEDIA_ROLES: tuple[str, ...] = ("image", "src", "tgt")
ITEM_KINDS: tuple[str, ...] = ("face", "pair")

DEFAULT_GUIDELINES = """\
Label the expression of the face (for a pair: the TARGET face, on the right).
Pick one of seven expressions with keys 1-7, then how strongly it shows with Q (slightly),
W (normally) or E (strongly); a neutral face takes no intensity. Press Enter to submit.
- Judge the face only: ignore the background, clothing and the caption.
- Slightly: visible only on a close look (a faint smile, a hint of a frown).
- Normally: clear at a glance, as in everyday conversation.
- Strongly: the extreme of the expression (laughing, crying, screaming, gaping).
- Several expressions at once: choose the dominant one.
- Skip (X) when the face is not visible, blurred beyond judgement, or not a real face.
- Z undoes your last label or skip and shows that item again.
"""


def caption(expression: str, intensity: str | None) -> str:
    """The captioner's target text for a label: 'neutral' or '<intensity> <expression>'."""
    return expression if intensity is None else f"{intensity} {expression}"
