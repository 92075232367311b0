"""The evaluation report folder.

Its data model (``model``), figures (``figures``), HTML and Markdown pages (``pages``) and
the writer that puts CSV, JSON and pages in a folder (``writer``).
"""
