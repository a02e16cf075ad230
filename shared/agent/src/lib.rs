//! Agent SDK: keys, registration, heartbeats, answering proposals, built-in fault layer
