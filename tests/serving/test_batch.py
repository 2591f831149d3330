"""A merged batch in which the model fails on some texts: the others are still answered."""
import numpy as np

from yanjin.serving.batch import classify_each


def model_failing_on(poison: set[str]):
    calls = []

    def predict(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        if poison & set(texts):
            raise RuntimeError("ONNXRuntimeError: bad input")
        return np.array([[len(t), 1.0] for t in texts])
    return predict, calls


def test_one_failing_text_never_fails_the_others_in_its_batch():
    texts = [f"text {i}" for i in range(16)]
    predict, calls = model_failing_on({"text 5", "text 11"})
    parts = list(classify_each(predict, texts))
    answered = {i: p.probs[j, 0] for p in parts if p.error is None for j, i in enumerate(p.positions)}
    failed = sorted(i for p in parts if p.error for i in p.positions)
    assert failed == [5, 11] and sorted(answered) == [i for i in range(16) if i not in (5, 11)]
    assert all(answered[i] == len(texts[i]) for i in answered)             # each answer is its own text's
    assert all("RuntimeError: ONNXRuntimeError" in p.error for p in parts if p.error)
    assert len(calls) <= 1 + 2 * 2 * 4                                      # about log2(16) extra calls per bad text


def test_a_healthy_batch_is_one_call():
    predict, calls = model_failing_on(set())
    parts = list(classify_each(predict, ["a", "b", "c"]))
    assert calls == [3] and len(parts) == 1 and parts[0].positions == [0, 1, 2]
