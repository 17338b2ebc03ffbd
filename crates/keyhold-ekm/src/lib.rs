//! External key manager (EKM) protocol, client and server.
