//! Example agents and scenarios run against a live mabeam stack
