"""``python -m cmidd.report <sweep dir>``: tables and plots of a sweep's results."""
