//! `banner_server.signals`: a server that watches its own signals (tests/signals.rs).
pykiln::main!(entry_point = "banner_server.signals:main");
