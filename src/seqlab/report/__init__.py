"""The tour's outputs: results.json and a self-contained HTML report."""
