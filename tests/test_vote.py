import pytest
import torch

from videopure_core import majority, vote


def logits_for(predictions, num_classes):
    """(K, B) predictions -> (K, B, C) logits whose argmax is the prediction."""
    p = torch.tensor(predictions)
    return torch.nn.functional.one_hot(p, num_classes).float() * 5.0


def test_majority_counts_and_winner():
    res = vote(logits_for([[2], [2], [1], [2], [0], [1], [2]], 4), candidate_labels=range(6, -1, -1))
    assert res.predictions[:, 0].tolist() == [2, 2, 1, 2, 0, 1, 2]
    assert res.counts[0].tolist() == [1, 2, 4, 0]
    assert res.winner.tolist() == [2]
    assert res.candidate_labels == (6, 5, 4, 3, 2, 1, 0)


def test_ties_go_to_the_smallest_class_index():
    # 3 vs 3 between classes 4 and 1 (plus one vote for 0): class 1 wins
    res = vote(logits_for([[4], [1], [4], [1], [4], [1], [0]], 5), range(7))
    assert res.winner.tolist() == [1]
    counts, winner = majority(torch.tensor([[3, 2], [2, 3]]), 4)
    assert winner.tolist() == [2, 2] and counts.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]


def test_batch_of_videos_votes_independently():
    res = vote(logits_for([[0, 3], [0, 3], [1, 2]], 4), range(3))
    assert res.winner.tolist() == [0, 3]
    assert res.counts.tolist() == [[2, 1, 0, 0], [0, 0, 1, 2]]


def test_table_lists_every_candidate_and_the_vote():
    res = vote(logits_for([[1], [0], [1]], 2), (2, 1, 0))
    text = res.table(["cat", "dog"])
    assert "z_0^2" in text and "z_0^0" in text and "winner" in text and "dog: 2" in text and "cat: 1" in text


def test_vote_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="K candidates"):
        vote(torch.zeros(3, 4), range(3))
    with pytest.raises(ValueError, match="labels"):
        vote(torch.zeros(3, 1, 4), range(2))
