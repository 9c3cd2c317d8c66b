"""Reading a leaderboard.csv for comparison with another run's."""
import pandas as pd

from benchmark.harness.runs import MEASURED_COLUMNS


def comparable_board(path) -> pd.DataFrame:
    """The leaderboard at path without its measured wall-time columns, which differ between two runs that make the
    same images (a resumed run, more processes); every other cell is compared, as exactly as the caller asks."""
    board = pd.read_csv(path)
    assert all(c in board.columns for c in MEASURED_COLUMNS)  # the column is there and was measured
    return board.drop(columns=list(MEASURED_COLUMNS))
