"""A flex flow class with __aggregate__: bulk runs hand it every line's result."""


class Grader:
    def __init__(self, passing: int = 3):
        self.passing = passing

    def __call__(self, answer: str, expected: str):
        return {"correct": answer.strip().lower() == expected.strip().lower(), "length": len(answer)}

    def __aggregate__(self, line_results: list):
        correct = sum(1 for r in line_results if r["correct"])
        return {
            "accuracy": round(correct / len(line_results), 3),
            "lines": len(line_results),
            "passed": correct >= self.passing,
            "kinds": sorted({type(r).__name__ for r in line_results}),
        }
