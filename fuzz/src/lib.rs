//! The fuzz targets' shared checks (`invariants.rs`, also included by `tests/fuzz.rs`).

pub mod invariants {
    include!("invariants.rs");

    /// The `pods` block to compute conflist artefacts for, picked by `mode`: none unless its
    /// bit 1 is set, else `PODS_BLOCKS[mode >> 2 & 3]` (bits 2 and 3).
    pub fn pods(mode: u8) -> Option<&'static Pods> {
        static MODELS: std::sync::OnceLock<Vec<Option<netqos::model::Model>>> =
            std::sync::OnceLock::new();
        let models = MODELS.get_or_init(|| {
            (0..4u8)
                .map(|i| netqos::check_source(&pods_policy(i << 2), &ExternalVars::default()).model)
                .collect()
        });
        models[usize::from(mode >> 2 & 3)]
            .as_ref()
            .and_then(|m| m.pods.as_ref())
            .filter(|_| mode & 2 == 2)
    }
}
