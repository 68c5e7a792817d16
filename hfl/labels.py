"""The paper's label set (Sec. 3.1, App. B.2): seven expressions and three intensity levels."""

EXPRESSIONS = ("neutral", "happy", "sad", "surprised", "fearful", "disgusted", "angry")
INTENSITIES = ("slightly", "normally", "strongly")
