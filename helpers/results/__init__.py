"""The committed tables' home: one module per table (or per lesson's tables) in data/, each with the
command that regenerates it and its provenance. `python -m helpers.workbook.regenerate --list` names them all;
helpers.workbook.committed holds the plumbing they share (CSV, provenance, the --seeds/--out command line).
"""
