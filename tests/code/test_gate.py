"""The gate registers only candidates that meet every floor and beat every champion it is held to."""
from yanjin.components.gate import ChampionScore, GateParams, decide

GOOD = {"accuracy": 0.93, "macro_f1": 0.92, "ece": 0.03}
FLOORS = GateParams(min_accuracy=0.9, min_macro_f1=0.88, max_ece=0.1)


def champ(acc, model="banking77-v1", version="3"):
    return ChampionScore(model, version, acc)


def test_first_candidate_meeting_floors_registers():
    d = decide(GOOD, FLOORS)
    assert d.register and d.reasons == [] and d.verdict == "register"


def test_each_floor_blocks_on_its_own():
    assert not decide(GOOD | {"accuracy": 0.89}, FLOORS).register
    assert not decide(GOOD | {"macro_f1": 0.80}, FLOORS).register
    assert not decide(GOOD | {"ece": 0.2}, FLOORS).register


def test_candidate_must_beat_champion_not_tie_it():
    assert decide(GOOD, FLOORS, [champ(0.92)]).register
    tie = decide(GOOD, FLOORS, [champ(0.93)])
    assert not tie.register and "does not beat banking77-v1 champion v3" in tie.reasons[0]


def test_margin_over_champion_is_respected():
    params = GateParams(min_improvement=0.02)
    assert not decide(GOOD, params, [champ(0.92)]).register
    assert decide(GOOD, params, [champ(0.90)]).register


def test_a_pro_candidate_must_also_beat_the_general_champion():
    own, general = champ(0.90, "banking77-pro", "1"), champ(0.935, "banking77-v1", "2")
    d = decide(GOOD, FLOORS, [own, general])
    assert not d.register and d.reasons == [
        "accuracy 0.9300 does not beat banking77-v1 champion v2 (0.9350 + margin 0.0000) on the same test set"]


def test_all_reasons_are_reported():
    d = decide({"accuracy": 0.5, "macro_f1": 0.4, "ece": 0.5}, FLOORS, [champ(0.9)])
    assert len(d.reasons) == 4


def test_lite_is_held_to_its_teacher_floors():
    from yanjin.components.gate import TeacherScore

    floors = GateParams(min_teacher_accuracy_ratio=0.97, max_teacher_size_ratio=0.10)
    teacher = TeacherScore("banking77-pro", "4", accuracy=0.95, onnx_bytes=90_000_000)
    small = GOOD | {"onnx_bytes": 5_000_000}
    assert decide(small, floors, teacher=teacher).register  # 0.93 / 0.95 = 97.9%, 5.6% of the size
    too_weak = decide(small | {"accuracy": 0.90}, floors, teacher=teacher)
    assert not too_weak.register and too_weak.reasons == [
        "accuracy 0.9000 is 94.7% of teacher banking77-pro v4 (0.9500) < floor 97.0%"]
    too_big = decide(GOOD | {"onnx_bytes": 22_900_000}, floors, teacher=teacher)
    assert not too_big.register and "25.4% of teacher's 90,000,000 > ceiling 10.0%" in too_big.reasons[0]
    assert decide(GOOD | {"onnx_bytes": 1}, GateParams(), teacher=teacher).register  # floors off by default


def test_the_gate_page_puts_the_verdict_and_every_reason_first():
    from yanjin.components.report import gate_markdown
    from yanjin.components.stages import gate_floors

    params = GateParams(min_accuracy=0.9, min_macro_f1=0.5, max_ece=0.2)
    figures = {"accuracy": 0.85, "macro_f1": 0.8, "ece": 0.3}
    decision = decide(figures, params, [ChampionScore("banking77-v1", "4", 0.92)])
    page = gate_markdown(decision.to_dict(), figures, gate_floors(params), "banking77-pro")
    head, *rest = page.splitlines()
    assert head == "## Gate: **reject** (banking77-pro)"
    for reason in decision.reasons:                       # each failed condition, as the decision says it
        assert f"- {reason}" in rest
    assert len(decision.reasons) == 3 and "| banking77-v1 | 4 | 0.9200 |" in page and "| calibration error | <= 0.2 | 0.3000 |" in page
    passed = gate_markdown(decide({"accuracy": 0.95, "macro_f1": 0.9, "ece": 0.1}, params).to_dict(), figures,
                           gate_floors(params), "banking77-pro")
    assert passed.startswith("## Gate: **register**") and "every floor met" in passed
