//! `netqos explain NQ###`: the long explanation of a diagnostic code.

use super::Exit;
use super::error::Error;
use netqos::codes::Code;

pub fn run(code: Option<&str>) -> Result<Exit, Error> {
    let Some(text) = code else {
        for c in Code::ALL {
            outln!("{c}  {:<8} {}", c.severity().as_str(), c.title());
        }
        return Ok(Exit::Ok);
    };
    let c = Code::parse(text).ok_or_else(|| Error::UnknownCode(text.to_string()))?;
    out!("{}", c.explanation());
    Ok(Exit::Ok)
}
