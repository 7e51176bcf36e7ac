//! A queue's settings as `key=value` text ([`QueueSetting`], what `pgq queue config` takes) and
//! the checks every [`QueueConfig`] passes before it is stored ([`QueueConfig::check`]).

use std::str::FromStr;
use std::time::Duration;

use crate::types::QueueConfig;

/// The keys of [`QueueSetting`], as `pgq queue config` and [`QueueSetting::from_str`] take them.
pub const QUEUE_SETTING_KEYS: &[&str] = &[
    "ticker_max_count",
    "ticker_max_lag",
    "ticker_idle_period",
    "ticker_paused",
    "rotation_period",
    "external_ticker",
    "disable_insert",
    "per_tx_limit",
];

/// One setting of a queue's configuration (a field of [`QueueConfig`]), parsed from
/// `key=value`:
///
/// ```
/// use std::time::Duration;
/// use pgq_core::{QueueConfig, QueueSetting};
///
/// let s: QueueSetting = "ticker_max_lag=500ms".parse()?;
/// assert_eq!(s, QueueSetting::TickerMaxLag(Duration::from_millis(500)));
/// let config: QueueConfig = ["ticker_max_count=100", "per_tx_limit=none"]
///     .iter()
///     .map(|s| s.parse::<QueueSetting>())
///     .collect::<Result<_, _>>()?;
/// assert_eq!(config.ticker_max_count, Some(100));
/// assert_eq!(config.per_tx_limit, Some(None));
/// assert!("ticker_max_count=0".parse::<QueueSetting>().is_err());
/// # Ok::<(), pgq_core::QueueSettingError>(())
/// ```
///
/// Durations are written as everywhere else (`500ms`, `2s`, `1m`, or bare seconds; see
/// [`crate::duration`]), at most [`QueueConfig::MAX_DURATION`]; booleans as
/// `true`/`false`/`on`/`off`/`yes`/`no`/`1`/`0`; `per_tx_limit` also takes `none` (no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueSetting {
    /// `ticker_max_count`: tick after this many events (at least 1).
    TickerMaxCount(i32),
    /// `ticker_max_lag`: tick at least this often when there are events.
    TickerMaxLag(Duration),
    /// `ticker_idle_period`: tick at least this often when idle.
    TickerIdlePeriod(Duration),
    /// `ticker_paused`: pause ticking.
    TickerPaused(bool),
    /// `rotation_period`: rotate the event tables this often (more than zero).
    RotationPeriod(Duration),
    /// `external_ticker`: ticks come from an external source.
    ExternalTicker(bool),
    /// `disable_insert`: refuse inserts.
    DisableInsert(bool),
    /// `per_tx_limit`: most events one transaction may insert (at least 1); `None`: no limit.
    PerTxLimit(Option<i32>),
}

/// Why a queue setting was refused. The message names the key and says what it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueSettingError {
    /// Not `key=value`.
    #[error("expected KEY=VALUE, got {input:?} (keys: {})", QUEUE_SETTING_KEYS.join(", "))]
    NotKeyValue {
        /// What was given.
        input: String,
    },
    /// A key no queue setting has.
    #[error("unknown setting {key:?} (keys: {})", QUEUE_SETTING_KEYS.join(", "))]
    UnknownKey {
        /// The key given.
        key: String,
    },
    /// A value the key does not take.
    #[error("{reason}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// What is wrong, naming the key.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: String) -> QueueSettingError {
    QueueSettingError::InvalidValue { key, reason }
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, QueueSettingError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(invalid(
            key,
            format!("{key} must be true or false, not {v:?}"),
        )),
    }
}

fn count_error(key: &'static str, v: &str) -> QueueSettingError {
    invalid(
        key,
        format!("{key} must be a whole number from 1 to 2147483647, not {v:?}"),
    )
}

fn parse_count(key: &'static str, v: &str) -> Result<i32, QueueSettingError> {
    match v.parse::<i32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(count_error(key, v)),
    }
}

/// A duration for a queue setting: the common syntax, at most [`QueueConfig::MAX_DURATION`].
pub fn parse_setting_duration(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse_duration(s).map_err(|e| e.to_string())?;
    if d > QueueConfig::MAX_DURATION {
        return Err(format!(
            "duration {:?} is out of range: a queue setting is at most 100 years",
            s.trim()
        ));
    }
    Ok(d)
}

impl QueueSetting {
    /// The setting's key.
    pub fn key(&self) -> &'static str {
        match self {
            QueueSetting::TickerMaxCount(_) => "ticker_max_count",
            QueueSetting::TickerMaxLag(_) => "ticker_max_lag",
            QueueSetting::TickerIdlePeriod(_) => "ticker_idle_period",
            QueueSetting::TickerPaused(_) => "ticker_paused",
            QueueSetting::RotationPeriod(_) => "rotation_period",
            QueueSetting::ExternalTicker(_) => "external_ticker",
            QueueSetting::DisableInsert(_) => "disable_insert",
            QueueSetting::PerTxLimit(_) => "per_tx_limit",
        }
    }

    /// Parse the value of `key`.
    pub fn parse(key: &str, value: &str) -> Result<QueueSetting, QueueSettingError> {
        let Some(&key) = QUEUE_SETTING_KEYS.iter().find(|k| **k == key) else {
            return Err(QueueSettingError::UnknownKey {
                key: key.to_owned(),
            });
        };
        let d =
            |v: &str| parse_setting_duration(v).map_err(|e| invalid(key, format!("{key}: {e}")));
        let setting = match key {
            "ticker_max_count" => QueueSetting::TickerMaxCount(parse_count(key, value)?),
            "ticker_max_lag" => QueueSetting::TickerMaxLag(d(value)?),
            "ticker_idle_period" => QueueSetting::TickerIdlePeriod(d(value)?),
            "ticker_paused" => QueueSetting::TickerPaused(parse_bool(key, value)?),
            "rotation_period" => QueueSetting::RotationPeriod(d(value)?),
            "external_ticker" => QueueSetting::ExternalTicker(parse_bool(key, value)?),
            "disable_insert" => QueueSetting::DisableInsert(parse_bool(key, value)?),
            _ => QueueSetting::PerTxLimit(match value.to_ascii_lowercase().as_str() {
                "none" | "null" | "unlimited" => None,
                _ => Some(parse_count(key, value)?),
            }),
        };
        setting.check()?;
        Ok(setting)
    }

    /// Check the value (what [`QueueConfig::check`] checks for this key).
    pub fn check(&self) -> Result<(), QueueSettingError> {
        let key = self.key();
        match *self {
            QueueSetting::TickerMaxCount(n) | QueueSetting::PerTxLimit(Some(n)) if n < 1 => {
                Err(count_error(key, &n.to_string()))
            }
            QueueSetting::TickerMaxLag(d)
            | QueueSetting::TickerIdlePeriod(d)
            | QueueSetting::RotationPeriod(d)
                if d > QueueConfig::MAX_DURATION =>
            {
                Err(invalid(
                    key,
                    format!(
                        "{key} of {}s is out of range: a queue setting is at most 100 years \
                         ({}s)",
                        d.as_secs(),
                        QueueConfig::MAX_DURATION.as_secs()
                    ),
                ))
            }
            QueueSetting::RotationPeriod(d) if d.is_zero() => Err(invalid(
                key,
                "rotation_period must be greater than zero".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

impl FromStr for QueueSetting {
    type Err = QueueSettingError;

    /// `key=value` (spaces around either are ignored).
    fn from_str(s: &str) -> Result<QueueSetting, QueueSettingError> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| QueueSettingError::NotKeyValue {
                input: s.to_owned(),
            })?;
        QueueSetting::parse(key.trim(), value.trim())
    }
}

impl QueueConfig {
    /// Set one field (a later setting of the same key wins).
    pub fn set(&mut self, setting: QueueSetting) {
        match setting {
            QueueSetting::TickerMaxCount(n) => self.ticker_max_count = Some(n),
            QueueSetting::TickerMaxLag(d) => self.ticker_max_lag = Some(d),
            QueueSetting::TickerIdlePeriod(d) => self.ticker_idle_period = Some(d),
            QueueSetting::TickerPaused(b) => self.ticker_paused = Some(b),
            QueueSetting::RotationPeriod(d) => self.rotation_period = Some(d),
            QueueSetting::ExternalTicker(b) => self.external_ticker = Some(b),
            QueueSetting::DisableInsert(b) => self.disable_insert = Some(b),
            QueueSetting::PerTxLimit(l) => self.per_tx_limit = Some(l),
        }
    }

    /// The settings this configuration changes (its `Some` fields), in key order.
    pub fn settings(&self) -> Vec<QueueSetting> {
        [
            self.ticker_max_count.map(QueueSetting::TickerMaxCount),
            self.ticker_max_lag.map(QueueSetting::TickerMaxLag),
            self.ticker_idle_period.map(QueueSetting::TickerIdlePeriod),
            self.ticker_paused.map(QueueSetting::TickerPaused),
            self.rotation_period.map(QueueSetting::RotationPeriod),
            self.external_ticker.map(QueueSetting::ExternalTicker),
            self.disable_insert.map(QueueSetting::DisableInsert),
            self.per_tx_limit.map(QueueSetting::PerTxLimit),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Check every value set: counts at least 1, durations at most
    /// [`MAX_DURATION`](Self::MAX_DURATION), a rotation period above zero.
    /// [`crate::set_queue_config`] and [`crate::create_queue_with`] check this first.
    pub fn check(&self) -> Result<(), QueueSettingError> {
        self.settings().iter().try_for_each(QueueSetting::check)
    }
}

impl FromIterator<QueueSetting> for QueueConfig {
    fn from_iter<I: IntoIterator<Item = QueueSetting>>(settings: I) -> QueueConfig {
        let mut config = QueueConfig::default();
        for s in settings {
            config.set(s);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_and_is_checked() {
        let ok = |s: &str| s.parse::<QueueSetting>().unwrap();
        let err = |s: &str| s.parse::<QueueSetting>().unwrap_err().to_string();
        assert_eq!(
            ok(" ticker_max_count = 7 "),
            QueueSetting::TickerMaxCount(7)
        );
        assert_eq!(
            ok("ticker_idle_period=1m"),
            QueueSetting::TickerIdlePeriod(Duration::from_secs(60))
        );
        assert_eq!(ok("ticker_paused=on"), QueueSetting::TickerPaused(true));
        assert_eq!(ok("disable_insert=0"), QueueSetting::DisableInsert(false));
        assert_eq!(ok("per_tx_limit=none"), QueueSetting::PerTxLimit(None));
        assert_eq!(ok("per_tx_limit=5"), QueueSetting::PerTxLimit(Some(5)));
        assert!(err("novalue").contains("KEY=VALUE"));
        assert!(err("no_such_key=1").contains("unknown setting \"no_such_key\""));
        assert!(err("ticker_paused=maybe").contains("ticker_paused must be true or false"));
        assert!(err("per_tx_limit=-1").contains("per_tx_limit must be a whole number"));
        assert!(
            err("ticker_max_lag=9999999999999999s")
                .contains("ticker_max_lag: duration \"9999999999999999s\" is out of range")
        );
        assert!(err("rotation_period=0s").contains("greater than zero"));
        for key in QUEUE_SETTING_KEYS {
            assert!(QueueSetting::parse(key, "").is_err(), "{key}");
        }
    }

    #[test]
    fn configs_are_checked_as_settings_are() {
        let c: QueueConfig = [
            QueueSetting::TickerMaxCount(3),
            QueueSetting::PerTxLimit(None),
        ]
        .into_iter()
        .collect();
        assert_eq!(c.ticker_max_count, Some(3));
        assert_eq!(c.per_tx_limit, Some(None));
        assert!(c.check().is_ok());
        let bad = QueueConfig {
            ticker_max_count: Some(0),
            ..QueueConfig::default()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("ticker_max_count")
        );
        let bad = QueueConfig {
            rotation_period: Some(QueueConfig::MAX_DURATION + Duration::from_secs(1)),
            ..QueueConfig::default()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("at most 100 years")
        );
    }
}
