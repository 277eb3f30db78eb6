"""agent-patterns: the pattern layer shared by the llm, search, crawl and streaming functions.

Importing the package is cheap on purpose: every submodule is imported by the function that
needs it, so a function's cold start pays only for what it uses.
"""

__version__ = "0.1.0"
