"""Data: the task interface, synthetic task generators and corpus readers.

Importing this package registers every task with `seqlab.registry.TASKS`.
"""

from seqlab.data import logic  # noqa: F401  (registers tasks)
from seqlab.data import synthetic, text  # noqa: F401  (registers the recurrent era's tasks)
from seqlab.data import parallel, translation_synthetic  # noqa: F401  (registers the translation tasks)
from seqlab.data import senses  # noqa: F401  (registers the contextual-embeddings corpus)
from seqlab.data import word_contexts  # noqa: F401  (registers the word-vector corpora)
from seqlab.data import babi, memory_tasks  # noqa: F401  (registers the memory tasks)
from seqlab.data import transfer  # noqa: F401  (registers the fine-tuning task over lines of text)
from seqlab.data.base import IGNORE, Batch, GeneratedTask, Task, TaskInfo

__all__ = ["IGNORE", "Batch", "GeneratedTask", "Task", "TaskInfo"]
