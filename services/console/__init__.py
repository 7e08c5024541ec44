"""The console: the staff's and customers' web pages over the services' APIs; it keeps sign-in sessions only."""
