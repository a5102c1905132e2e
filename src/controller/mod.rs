//! Reconcilers. Each kind's module follows observe → pure plan → apply.
