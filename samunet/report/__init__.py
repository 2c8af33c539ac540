"""samunet_report: an HTML page (``report.html`` and its PNGs in ``report_files/``) of a validation, a fold, a
prediction folder scored against references, or a comparison.

Sits above evaluation, dataset and preprocessing (it reads their files and reuses their metrics) and below
training and compare, which write a report when they finish.
"""
