"""What a release records of its approval: who answered, how they are known, and why."""

from shipline.release.approval import ApprovalDecision


def test_the_record_names_the_answerer_as_unverified_with_the_comment() -> None:
    decision = ApprovalDecision(
        approve=True, comment=" looks good ", reviewer="alice (OS user of shipline approve)"
    )
    assert decision.recorded() == "approved by alice (OS user of shipline approve) (unverified): looks good"


def test_an_unnamed_answer_from_the_ui_form_says_so() -> None:
    assert ApprovalDecision(approve=True).recorded() == (
        "approved by an operator who gave no name (UI form) (unverified)"
    )
    assert ApprovalDecision(approve=False, reviewer="bob").recorded() == "rejected by bob (unverified)"
