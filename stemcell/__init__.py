"""stemcell."""
