//! Locks that keep working after a panic elsewhere.
//!
//! Every lock in Outpost guards a map or a small record that each holder
//! updates in one step (an insert, a remove, a field), never across an
//! await. A holder that panicked therefore cannot have left the data half
//! changed, and refusing to read it forever after (`PoisonError`) would turn
//! one failed task into a dead process.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock methods that ignore poisoning (see the module docs for why).
pub trait Unpoisoned<T: ?Sized> {
    type Guard<'a>
    where
        Self: 'a;
    fn lock_unpoisoned(&self) -> Self::Guard<'_>;
}

impl<T: ?Sized> Unpoisoned<T> for Mutex<T> {
    type Guard<'a>
        = MutexGuard<'a, T>
    where
        T: 'a;
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Read and write locks that ignore poisoning.
pub trait UnpoisonedRw<T: ?Sized> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> UnpoisonedRw<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_locked_does_not_lock_everyone_out() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock_unpoisoned();
            panic!("holder fails");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*m.lock_unpoisoned(), 1);
    }
}
