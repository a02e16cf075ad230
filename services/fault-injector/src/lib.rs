//! Fault injector service: agent behaviours, partitions, TCP fault proxy, scenario files
