//! Business rules as plain functions over plain data.
