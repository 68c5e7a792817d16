"""The team: user names (NFKC, no look-alikes), project membership, disabling users, password changes.

* User names are stored NFKC-normalised (full-width 'ａｄｍｉｎ' becomes 'admin'); a name may use letters
  of one script only (Latin 'admin' with a Cyrillic 'а' is refused), ASCII digits and '-', '_', '.';
  and it is refused when its look-alike skeleton (case-folded, Cyrillic/Greek letters that look Latin
  mapped to Latin, 0 -> o, 1 -> l, rn -> m) equals an existing user's.
* Annotators see and get only the projects they are members of; admins see every project.
* Disabling a user, or setting their password, ends all their sessions (and a disabled user's leases).
"""

from __future__ import annotations

import unicodedata

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from annotation_ui.models import Claim, Item, Project, ProjectMember, User, WebSession, utcnow
from annotation_ui.security import hash_password, normalize_username

# Letters of other scripts that render like Latin letters (lower case, after case folding).
_LOOKALIKE = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "г": "r", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ь": "b", "ы": "bl", "ɡ": "g",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
    "ρ": "p", "σ": "o", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    # digits and pairs that read as letters
    "0": "o", "1": "l",
}  # fmt: skip
_SCRIPT_GROUPS = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "HANGUL", "CJK": "CJK"}


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "UNKNOWN").split(" ")[0]
    return _SCRIPT_GROUPS.get(name, name)


def skeleton(name: str) -> str:
    """What a name looks like: case-folded, look-alike letters mapped to Latin."""
    folded = normalize_username(name).casefold()
    return "".join(_LOOKALIKE.get(c, c) for c in folded).replace("rn", "m").replace("vv", "w")


def check_username(s: Session, raw: str) -> str:
    """The name to store (NFKC); ValueError with the reason when it is malformed or looks like another."""
    name = normalize_username(raw)
    if not 1 <= len(name) <= 64:
        raise ValueError("user names: 1-64 characters")
    bad = [c for c in name if not (c.isalpha() or c in "-_." or (c.isascii() and c.isdigit()))]
    if bad:
        raise ValueError(f"user names: letters, ASCII digits, '-', '_' or '.' only (not {bad[0]!r})")
    scripts = sorted({_script(c) for c in name if c.isalpha()})
    if len(scripts) > 1:
        raise ValueError(
            f"user name {name!r} mixes scripts ({', '.join(s.lower() for s in scripts)}): "
            "it could pass for another name"
        )
    mine = skeleton(name)
    for other in s.scalars(select(User.username)):
        if other == name:
            raise ValueError(f"user {name!r} exists")
        if skeleton(other) == mine:
            raise ValueError(f"user name {name!r} looks like the existing user {other!r}")
    return name


def find_user(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.username == normalize_username(name)))
    if user is None:
        raise ValueError(f"no user {normalize_username(name)!r}")
    return user


def find_project(s: Session, name: str) -> Project:
    project = s.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise ValueError(f"no project {name!r}")
    return project


def is_member(s: Session, project_id: int, user_id: int) -> bool:
    return s.get(ProjectMember, (project_id, user_id)) is not None


def member_project_ids(s: Session, user_id: int) -> set[int]:
    return set(s.scalars(select(ProjectMember.project_id).where(ProjectMember.user_id == user_id)))


def set_member(s: Session, project: Project, user: User, member: bool = True) -> bool:
    """Add or remove one membership; True when something changed. Removing releases the user's leases."""
    row = s.get(ProjectMember, (project.id, user.id))
    if member and row is None:
        s.add(ProjectMember(project_id=project.id, user_id=user.id, added_at=utcnow()))
        s.flush()
        return True
    if not member and row is not None:
        s.delete(row)
        in_project = select(Item.id).where(Item.project_id == project.id)
        s.execute(
            delete(Claim)
            .where(Claim.annotator_id == user.id, Claim.item_id.in_(in_project))
            .execution_options(synchronize_session=False)
        )
        s.flush()
        return True
    return False


def members(s: Session, project: Project) -> list[User]:
    return list(
        s.scalars(
            select(User)
            .join(ProjectMember, ProjectMember.user_id == User.id)
            .where(ProjectMember.project_id == project.id)
            .order_by(User.username)
        )
    )


def team_size(s: Session, project: Project) -> int:
    """Active annotators who are members: who can label the project's items."""
    return int(
        s.scalar(
            select(func.count())
            .select_from(ProjectMember)
            .join(User, User.id == ProjectMember.user_id)
            .where(ProjectMember.project_id == project.id, User.active, User.role == "annotator")
        )
        or 0
    )


def revoke_sessions(s: Session, user_id: int) -> int:
    """End every login session of the user; returns how many there were."""
    return s.execute(delete(WebSession).where(WebSession.user_id == user_id)).rowcount


def set_active(s: Session, user: User, active: bool) -> int:
    """Enable or disable a user; disabling ends their sessions and frees their leased slots."""
    user.active = active
    ended = 0
    if not active:
        ended = revoke_sessions(s, user.id)
        s.execute(delete(Claim).where(Claim.annotator_id == user.id))
    s.flush()
    return ended


def set_password(s: Session, user: User, password: str) -> int:
    """A new password; every existing session of the user ends (returns how many)."""
    s.execute(update(User).where(User.id == user.id).values(password_hash=hash_password(password)))
    return revoke_sessions(s, user.id)
