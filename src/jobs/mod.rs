//! Generation jobs: the queue in PostgreSQL, the workers that claim jobs with a lease, call a
//! provider, store the image and settle the ledger hold exactly once.
