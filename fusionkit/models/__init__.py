"""Complete models built from fusionkit's blocks, one folder each."""
