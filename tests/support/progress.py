"""A progress callback that records its calls, and the check every library function's callback passes."""


class Recorder:
    """``callable(done, total)`` that keeps every call."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((int(done), int(total)))

    def check(self, total: int | None = None) -> None:
        """Called at least twice, one total throughout (``total`` if given), counts never
        decreasing and ending at the total."""
        assert len(self.calls) >= 2, self.calls
        totals = {t for _, t in self.calls}
        assert len(totals) == 1, self.calls
        (seen,) = totals
        if total is not None:
            assert seen == total, (seen, total)
        dones = [d for d, _ in self.calls]
        assert all(a <= b for a, b in zip(dones, dones[1:])), dones
        assert 0 <= dones[0] < dones[-1] == seen, dones
