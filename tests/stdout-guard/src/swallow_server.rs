//! `banner_server.swallow`: a server whose import swallows a stop (tests/signals.rs).
pykiln::main!(entry_point = "banner_server.swallow:main");
