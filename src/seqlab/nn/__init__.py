"""Building blocks, one family per file, each written from the equations of one seed section."""
