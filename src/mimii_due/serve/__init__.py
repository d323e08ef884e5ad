"""The scoring service, its decision record, dashboard and folder watcher; they call the library."""
