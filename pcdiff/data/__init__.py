"""Data: the character vocabulary, item data sets with a held-out split by type, and the real sources
(wordfreq words, standard-library lines, a user's text file)."""
from .items import ItemData
from .sources import load_dataset, load_python_lines, load_text_file, load_words
from .vocabulary import END_TOKEN, Vocabulary

__all__ = ["Vocabulary", "END_TOKEN", "ItemData", "load_words", "load_python_lines", "load_text_file", "load_dataset"]
