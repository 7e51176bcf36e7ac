use super::*;
use sqlx::postgres::PgSslMode;

#[test]
fn several_hosts_keyword_and_url_forms() {
    for s in [
        "host=a,b port=5432,5433 dbname=app user=pgq target_session_attrs=read-write",
        "postgres://pgq@a:5432,b:5433/app?target_session_attrs=read-write",
    ] {
        let t = ConnectTarget::parse(s).unwrap();
        assert_eq!(t.hosts().len(), 2, "{s}");
        assert_eq!(t.label(), "a:5432,b:5433/app");
        assert_eq!(t.describe(), "pgq@a:5432,b:5433/app");
        assert_eq!(t.target_session_attrs(), TargetSessionAttrs::ReadWrite);
    }
    // One port for every host.
    let t = ConnectTarget::parse("host=a,b port=6000 dbname=x user=u").unwrap();
    assert_eq!(t.label(), "a:6000,b:6000/x");
    let e = ConnectTarget::parse("host=a,b port=1,2,3 user=u dbname=x").unwrap_err();
    assert!(e.to_string().contains("3 port numbers to 2 hosts"), "{e}");
}

#[test]
fn values_are_checked_as_libpq_does() {
    let e = ConnectTarget::parse("host=h user=u dbname=d sslmode=requir").unwrap_err();
    assert!(
        e.to_string().contains("invalid sslmode value: \"requir\""),
        "{e}"
    );
    let e = ConnectTarget::parse("host=h user=u dbname=d connect_timeout=soon").unwrap_err();
    assert!(e.to_string().contains("connect_timeout"), "{e}");
    let e = ConnectTarget::parse("host=h user=u dbname=d target_session_attrs=rw").unwrap_err();
    assert!(e.to_string().contains("target_session_attrs"), "{e}");
    let e = ConnectTarget::parse("host=h user=u dbname=d keepalives_idle=0").unwrap_err();
    assert!(e.to_string().contains("keepalives_idle"), "{e}");
    let e = ConnectTarget::parse("host=h user=u dbname=d frobnicate=1").unwrap_err();
    assert!(e.to_string().contains("frobnicate"), "{e}");
}

#[test]
fn settings_sqlx_has_no_place_for() {
    let t = ConnectTarget::parse(
        "host=h user=u dbname=d connect_timeout=3 keepalives_idle=2 keepalives_interval=1 \
         keepalives_count=4 application_name=mine sslmode=verify-full sslrootcert=/ca.crt",
    )
    .unwrap()
    .with_default_application_name("pgq")
    .with_default_connect_timeout(Duration::from_secs(10));
    assert_eq!(t.connect_timeout(), Some(Duration::from_secs(3)));
    assert_eq!(t.keepalives().dead_after(), Duration::from_secs(6));
    assert_eq!(t.hosts()[0].get_application_name(), Some("mine"));
    assert!(matches!(t.hosts()[0].get_ssl_mode(), PgSslMode::VerifyFull));
    // 0 waits forever (the program's default applies).
    let t = ConnectTarget::parse("host=h user=u dbname=d connect_timeout=1").unwrap();
    assert_eq!(t.connect_timeout(), Some(Duration::from_secs(1)));
    let t = ConnectTarget::parse("host=h user=u dbname=d connect_timeout=0")
        .unwrap()
        .with_default_connect_timeout(Duration::from_secs(10));
    assert_eq!(t.connect_timeout(), Some(Duration::from_secs(10)));
    let t = ConnectTarget::parse("host=/tmp/sock port=5999 user=u dbname=d")
        .unwrap()
        .with_default_application_name("pgq");
    assert_eq!(t.label(), "/tmp/sock:5999/d");
    assert_eq!(t.hosts()[0].get_application_name(), Some("pgq"));
}

#[test]
fn passwords_never_in_errors() {
    let e = ConnectTarget::parse("postgres://u:pa/ss?x@h/db").unwrap_err();
    assert!(!e.to_string().contains("pa/ss"), "{e}");
    let e = ConnectTarget::parse("host=h password='Secret-9' sslmode=Secret-9").unwrap_err();
    assert!(!e.to_string().contains("Secret-9"), "{e}");
}

#[test]
fn attrs() {
    use TargetSessionAttrs as T;
    assert!(T::ReadWrite.matches(false, false));
    assert!(!T::ReadWrite.matches(true, true));
    assert!(T::Standby.matches(true, true));
    assert!(!T::Primary.matches(false, true));
    assert_eq!("prefer-standby".parse::<T>().unwrap(), T::PreferStandby);
}
