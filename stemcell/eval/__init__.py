"""Experiment plumbing shared by every benchmark: Parquet/JSON results, PNG plots, tables."""
from stemcell.eval.report import markdown_table, print_table, save_plot, save_results, write_json

__all__ = ["markdown_table", "print_table", "save_plot", "save_results", "write_json"]
