//! Xendit Customers API client and a local fake of it.
