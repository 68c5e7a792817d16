"""Agreement figures against a small example computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annotation_ui.agreement import (
    Vote,
    fleiss_kappa,
    gold_accuracy,
    item_result,
    krippendorff_alpha,
    project_agreement,
    reliability_matrix,
)

# Four items, five raters (a..e) each. Expression counts per item:
#   item 1: happy x5                      P_1 = (25-5)/20        = 1.0
#   item 2: happy x3, sad x2              P_2 = (9+4-5)/20       = 0.4
#   item 3: sad x4, angry x1              P_3 = (16+1-5)/20      = 0.6
#   item 4: neutral x2, happy x2, angry   P_4 = (4+4+1-5)/20     = 0.2
# P_bar = 2.2/4 = 0.55. Category shares of the 20 ratings: happy 10, sad 6, angry 2, neutral 2
#   -> P_e = .25 + .09 + .01 + .01 = 0.36. Fleiss' kappa = (0.55-0.36)/(1-0.36) = 0.296875.
# Krippendorff nominal: off-diagonal coincidences per item (25 - sum n_uc^2)/(5-1) = 0, 3, 2, 4 -> 9;
#   D_o = 9/20; D_e = (20^2 - (100+36+4+4)) / (20*19) = 256/380; alpha = 1 - (9/20)/(256/380) = 85/256.
EXAMPLE = {
    1: [("happy", "normally")] * 5,
    2: [
        ("happy", "slightly"),
        ("happy", "strongly"),
        ("happy", "strongly"),
        ("sad", "slightly"),
        ("sad", "normally"),
    ],
    3: [
        ("sad", "normally"),
        ("sad", "normally"),
        ("angry", "strongly"),
        ("sad", "strongly"),
        ("sad", "slightly"),
    ],
    4: [
        ("neutral", None),
        ("happy", "slightly"),
        ("neutral", None),
        ("happy", "normally"),
        ("angry", "strongly"),
    ],
}
FLEISS = 0.296875
ALPHA_NOMINAL = 85 / 256


def votes() -> list[Vote]:
    return [
        Vote(item, "abcde"[r], e, i, duration_ms=1000 * (r + 1))
        for item, labels in EXAMPLE.items()
        for r, (e, i) in enumerate(labels)
    ]


def test_fleiss_kappa_by_hand() -> None:
    table = np.array([[0, 5, 0, 0], [0, 3, 2, 0], [0, 0, 4, 1], [2, 2, 0, 1]])
    assert fleiss_kappa(table) == pytest.approx(FLEISS)
    assert fleiss_kappa(np.array([[5, 0], [0, 5]])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[5, 0], [0, 4]]))


def test_krippendorff_nominal_by_hand() -> None:
    m = reliability_matrix(votes(), "expression")
    assert m.shape == (5, 4)
    assert krippendorff_alpha(m, "nominal") == pytest.approx(ALPHA_NOMINAL)


def test_krippendorff_ordinal_by_hand() -> None:
    # Two items, three raters; intensity ranks slightly=0 normally=1 strongly=2.
    # Item A {0,0,1}, item B {1,2,2}. Coincidences: o01=o10=1, o00=1, o12=o21=1, o22=1; n_c = 2,2,2; n = 6.
    # Ordinal distances d_ck = (sum_{g=c..k} n_g - (n_c+n_k)/2)^2: d01 = d12 = 2^2 = 4, d02 = 4^2 = 16.
    # D_o = (4*1*4)/6 = 16/6; D_e = (2*4*4 + 2*4*4 + 2*4*16)/30 = 192/30; alpha = 1 - 480/1152 = 7/12.
    # The nominal alpha of the same data is 1 - (4/6)/(24/30) = 1/6: the ordinal metric must be in use.
    m = np.array([[0, 1], [0, 2], [1, 2]], dtype=float)
    assert krippendorff_alpha(m, "ordinal") == pytest.approx(7 / 12)
    assert krippendorff_alpha(m, "nominal") == pytest.approx(1 / 6)
    assert krippendorff_alpha(np.array([[0.0, 0.0], [0.0, 0.0]]), "nominal") is None  # one value: undefined


def test_item_rule_majority_quorum_and_intensity() -> None:
    by_item = {i: [v for v in votes() if v.item_id == i] for i in EXAMPLE}
    r1, r2, r3, r4 = (item_result(i, by_item[i], quorum=3) for i in (1, 2, 3, 4))
    assert (r1.expression, r1.kept, r1.intensity, r1.n_agree) == ("happy", True, "normally", 5)
    # happy raters said slightly, strongly, strongly -> median strongly; the sad raters do not count
    assert (r2.expression, r2.kept, r2.intensity) == ("happy", True, "strongly")
    assert r2.intensity_votes == {"slightly": 1, "strongly": 2}
    # sad raters: normally, normally, strongly, slightly -> sorted s,n,n,st -> lower median normally
    assert (r3.expression, r3.kept, r3.intensity, r3.n_agree) == ("sad", True, "normally", 4)
    # neutral 2 / happy 2 / angry 1: tied top count -> no majority, not kept
    assert (r4.expression, r4.kept) == (None, False)
    # quorum 5 keeps only the unanimous item
    assert [item_result(i, by_item[i], quorum=5).kept for i in (1, 2, 3, 4)] == [True, False, False, False]
    neutral = item_result(9, [Vote(9, x, "neutral", None) for x in "abc"], quorum=3)
    assert (neutral.expression, neutral.kept, neutral.intensity) == ("neutral", True, None)


def test_project_agreement_figures() -> None:
    rep = project_agreement(votes(), raters_per_item=5, quorum=3)
    assert rep["fleiss_kappa_expression"] == pytest.approx(FLEISS)
    assert rep["krippendorff_alpha_expression_nominal"] == pytest.approx(ALPHA_NOMINAL)
    assert rep["items_complete"] == 4 and rep["items_kept"] == 3
    assert rep["kept_expressions"] == {"happy": 2, "sad": 1}
    # rater d: item1 happy (agrees), item2 sad (majority happy), item3 sad (agrees) -> 2/3 on kept items
    d = rep["annotators"]["d"]
    assert d["on_kept_items"] == 3 and d["expression_agreement"] == pytest.approx(2 / 3)
    # exact: item1 happy/normally == majority (happy, normally); item3 sad/strongly != normally -> 1/3
    assert d["exact_agreement"] == pytest.approx(1 / 3)
    assert d["median_seconds"] == pytest.approx(4.0)
    conf = np.array(rep["confusion"])
    assert conf.sum() == 15  # the 15 ratings of the three kept items
    happy, sad, angry = 1, 2, 6
    assert conf[happy, happy] == 8 and conf[happy, sad] == 2 and conf[sad, sad] == 4 and conf[sad, angry] == 1
    alpha_int = rep["krippendorff_alpha_intensity_ordinal"]
    assert alpha_int is not None and -1 <= alpha_int <= 1 and not math.isnan(alpha_int)


def test_gold_accuracy() -> None:
    acc = gold_accuracy(
        [
            ("a", "happy", "slightly", "happy", "slightly"),
            ("a", "happy", "strongly", "happy", "slightly"),
            ("a", "sad", "slightly", "happy", "slightly"),
            ("b", "neutral", None, "neutral", None),
        ]
    )
    assert acc["a"]["gold_labels"] == 3
    assert acc["a"]["expression_accuracy"] == pytest.approx(2 / 3)
    assert acc["a"]["exact_accuracy"] == pytest.approx(1 / 3)
    assert acc["b"]["exact_accuracy"] == 1.0


def test_vectorised_figures_match_the_per_item_rule() -> None:
    """project_agreement (numpy, all votes at once) against item_result one item at a time and the
    plain definitions, on 300 random items with 7 raters, some items incomplete, ties included."""
    from collections import Counter

    from annotation_ui.agreement import EXPRESSIONS, INTENSITIES, confusion

    rng = np.random.default_rng(7)
    raters = [f"r{i}" for i in range(7)]
    vs = []
    for item in range(1, 301):
        truth = int(rng.integers(0, 7))
        for r in rng.choice(raters, size=int(rng.choice([5, 5, 5, 4, 2])), replace=False):
            e = EXPRESSIONS[truth if rng.random() < 0.5 else int(rng.integers(0, 7))]
            i = None if e == "neutral" else INTENSITIES[int(rng.integers(0, 3))]
            vs.append(Vote(item, str(r), e, i, duration_ms=int(rng.integers(500, 9000))))
    rep = project_agreement(vs, raters_per_item=5, quorum=3)
    by_item: dict[int, list[Vote]] = {}
    for v in vs:
        by_item.setdefault(v.item_id, []).append(v)
    slow = {i: item_result(i, g, quorum=3, raters=5) for i, g in by_item.items()}
    assert rep["items"] == slow
    assert rep["items_kept"] == sum(r.kept for r in slow.values()) > 0
    assert rep["items_complete"] == sum(len(g) == 5 for g in by_item.values())
    assert any(r.expression is None for r in slow.values())  # ties occur in the sample
    for name in raters:
        mine = [v for v in vs if v.annotator == name]
        on_kept = [v for v in mine if slow[v.item_id].kept]
        agree = [v for v in on_kept if v.expression == slow[v.item_id].expression]
        exact = [v for v in agree if v.intensity == slow[v.item_id].intensity]
        a = rep["annotators"][name]
        assert (a["labels"], a["on_kept_items"]) == (len(mine), len(on_kept))
        assert a["expression_agreement"] == pytest.approx(len(agree) / len(on_kept))
        assert a["exact_agreement"] == pytest.approx(len(exact) / len(on_kept))
        assert a["median_seconds"] == pytest.approx(float(np.median([v.duration_ms for v in mine])) / 1000)
    assert rep["confusion"] == confusion(vs, slow).tolist()
    assert rep["krippendorff_alpha_expression_nominal"] == pytest.approx(
        krippendorff_alpha(reliability_matrix(vs, "expression"), "nominal")
    )
    assert rep["krippendorff_alpha_intensity_ordinal"] == pytest.approx(
        krippendorff_alpha(reliability_matrix(vs, "intensity"), "ordinal")
    )
    complete = sorted(i for i, g in by_item.items() if len(g) == 5)
    table = np.array([[Counter(v.expression for v in by_item[i])[e] for e in EXPRESSIONS] for i in complete])
    assert rep["fleiss_kappa_expression"] == pytest.approx(fleiss_kappa(table))


def test_no_votes_yet() -> None:
    rep = project_agreement([], raters_per_item=5, quorum=3)
    assert (rep["labels"], rep["items_labelled"], rep["items_kept"], rep["items"]) == (0, 0, 0, {})
    assert rep["fleiss_kappa_expression"] is None and rep["seconds_per_item"] is None
