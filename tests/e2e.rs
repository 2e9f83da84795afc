//! End-to-end tests: they run the `kiln` binary against a real CNCF distribution registry on
//! loopback, with a busybox base image made from Debian's busybox-static. Root is required
//! (kiln mounts overlays and creates namespaces).

mod e2e {
    mod add;
    mod attest;
    mod bridges;
    mod build;
    mod buildx_flags;
    mod cache_keys;
    mod cache_mounts;
    mod cancel;
    mod compose;
    mod compression;
    mod containers;
    mod context;
    mod context_tar;
    mod copy_add;
    mod crash;
    mod detach;
    mod errors;
    mod explain;
    mod frontend;
    mod gc;
    pub mod harness;
    mod history;
    mod hosts;
    mod images;
    mod mounts;
    mod multiplatform;
    mod named_contexts;
    mod network;
    mod old_store;
    mod on_error;
    mod outputs;
    mod ports;
    mod push;
    mod push_pull;
    mod registry_auth;
    mod remote_cache;
    mod remote_contexts;
    mod repeated_layers;
    mod reproducible;
    mod restart_policy;
    mod rootless;
    mod run;
    mod runtime;
    mod schedule;
    mod seams;
    mod security;
    mod semantics;
    mod serve;
    mod snapshot_reuse;
    mod ssh_forwarding;
    mod volumes;
}
