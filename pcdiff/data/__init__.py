"""Data: the character vocabulary, item data sets with a held-out split by type (their training
distribution as an exact empirical one), the real sources (wordfreq words, standard-library lines, a
user's text file) and puzzles with exact answers (permutations, Latin squares, 4×4 sudoku)."""
from .empirical import EmpiricalDistribution
from .items import ItemData
from .puzzles import TASKS, completions, get_task, load_task
from .sources import load_dataset, load_python_lines, load_text_file, load_words
from .vocabulary import END_TOKEN, Vocabulary

__all__ = ["Vocabulary", "END_TOKEN", "ItemData", "EmpiricalDistribution", "load_words", "load_python_lines",
           "load_text_file", "load_dataset", "TASKS", "get_task", "load_task", "completions"]
