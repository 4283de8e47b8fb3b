//! The fuzz targets' shared checks (`invariants.rs`, also included by `tests/fuzz.rs`).

pub mod invariants {
    include!("invariants.rs");

    /// A `pods` block to compute conflist artefacts for, picked by `mode`'s second bit:
    /// the example's (rke2-flannel, limits) or none.
    pub fn pods(mode: u8) -> Option<&'static Pods> {
        static MODEL: std::sync::OnceLock<Option<netqos::model::Model>> =
            std::sync::OnceLock::new();
        let model = MODEL.get_or_init(|| {
            let src = include_str!("../../examples/pods.nq");
            netqos::check_source(src, &ExternalVars::default()).model
        });
        model
            .as_ref()
            .and_then(|m| m.pods.as_ref())
            .filter(|_| mode & 2 == 2)
    }
}
