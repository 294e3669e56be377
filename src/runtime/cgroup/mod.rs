//! cgroups v1 and v2: limits, membership, freezing and statistics.
