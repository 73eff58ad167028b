//! Keeps the encoder's worker threads and a multi-threaded BLAS from oversubscribing the cores.
//!
//! With the `openblas` feature, burn-ndarray's matrix products go through OpenBLAS, which runs
//! each product on every core. When the encoder already runs one worker per core, both layers of
//! threads compete: measured on 2 cores, encoding at batch 32 fell from 135 to 97 sentences/s.
//! OpenBLAS also cuts its sums by its thread count, so its results depend on it; training holds
//! it to one thread for that reason alone. While any [`SingleThreadedBlas`] guard is alive
//! OpenBLAS runs on one thread; the last guard dropped restores its previous count. Without the
//! feature the guard does nothing.

#[cfg(feature = "openblas")]
mod imp {
    use std::os::raw::c_int;
    use std::sync::Mutex;

    extern "C" {
        fn openblas_get_num_threads() -> c_int;
        fn openblas_set_num_threads(num_threads: c_int);
    }

    /// (live guards, thread count before the first of them).
    static STATE: Mutex<(usize, c_int)> = Mutex::new((0, 0));

    pub fn enter() {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == 0 {
            // SAFETY: plain setters and getters of OpenBLAS's global thread count, linked in
            // through burn-ndarray's `blas-openblas-system` feature.
            state.1 = unsafe { openblas_get_num_threads() };
            unsafe { openblas_set_num_threads(1) };
        }
        state.0 += 1;
    }

    pub fn exit() {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        if state.0 == 0 {
            // SAFETY: as in `enter`.
            unsafe { openblas_set_num_threads(state.1) };
        }
    }

    pub fn threads() -> usize {
        // SAFETY: as in `enter`.
        unsafe { openblas_get_num_threads() }.max(1) as usize
    }
}

#[cfg(not(feature = "openblas"))]
mod imp {
    pub fn enter() {}
    pub fn exit() {}
    pub fn threads() -> usize {
        1
    }
}

/// While alive, BLAS matrix products run single-threaded (see the module docs).
pub struct SingleThreadedBlas(());

impl SingleThreadedBlas {
    pub fn new() -> Self {
        imp::enter();
        Self(())
    }
}

impl Default for SingleThreadedBlas {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SingleThreadedBlas {
    fn drop(&mut self) {
        imp::exit();
    }
}

/// The threads each BLAS matrix product may use now (1 without the `openblas` feature).
pub fn blas_threads() -> usize {
    imp::threads()
}

// Without the feature the guard is a no-op and there is nothing to observe.
#[cfg(all(test, feature = "openblas"))]
mod tests {
    use super::*;

    #[test]
    fn guards_nest_and_restore() {
        let before = blas_threads();
        {
            let _a = SingleThreadedBlas::new();
            assert_eq!(blas_threads(), 1);
            {
                let _b = SingleThreadedBlas::new();
                assert_eq!(blas_threads(), 1);
            }
            assert_eq!(blas_threads(), 1);
        }
        assert_eq!(blas_threads(), before);
    }
}
