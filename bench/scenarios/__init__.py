"""The five scenarios; each `run(bench)` returns its figures and `rows(figures)` its table lines."""
