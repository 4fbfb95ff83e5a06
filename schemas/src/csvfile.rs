//! What a CSV file must be for ingest to read it, checked where the file is: by ingest itself,
//! and by `warren submit` on a local file before it is uploaded (the step's descriptor says which
//! parameter names a CSV, which its delimiter, and which name its columns). Each refusal is one
//! line naming the line, column or byte.

/// Delimiters a CSV's header line is sniffed for.
pub const DELIMITERS: &[u8] = b",;\t|";

/// The text of a CSV file, which must be UTF-8 (a UTF-8 byte-order mark is dropped): a byte that
/// is not is refused naming its line, column and value.
pub fn utf8(bytes: &[u8]) -> Result<&str, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
        let column = at - bytes[..at].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) + 1;
        format!(
            "the CSV is not UTF-8: byte 0x{:02X} at line {line}, column {column} (Latin-1 or Windows-1252? save the \
             file as UTF-8)",
            bytes[at]
        )
    })
}

/// The text of a CSV file in `encoding`: `utf-8` (the default, see [`utf8`]) or `latin-1`
/// (ISO-8859-1: every byte is the character of that code).
pub fn decode<'a>(bytes: &'a [u8], encoding: Option<&str>) -> Result<std::borrow::Cow<'a, str>, String> {
    match encoding.map(str::to_ascii_lowercase).as_deref() {
        None | Some("utf-8" | "utf8") => utf8(bytes).map(std::borrow::Cow::Borrowed),
        Some("latin-1" | "latin1" | "iso-8859-1") => {
            Ok(std::borrow::Cow::Owned(bytes.iter().map(|&b| b as char).collect()))
        }
        Some(other) => Err(format!("encoding {other:?}: expected \"utf-8\" or \"latin-1\"")),
    }
}

/// How a CSV file is to be read: the options ingest takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// The delimiter, one character; sniffed when absent.
    pub delimiter: Option<&'a str>,
    /// Whether the first line names the columns (absent: yes).
    pub header: Option<bool>,
    /// `utf-8` (absent) or `latin-1`.
    pub encoding: Option<&'a str>,
}

/// The column names of a file without a header row: `column_1`, `column_2`, ….
pub fn numbered(width: usize) -> Vec<String> {
    (1..=width).map(|i| format!("column_{i}")).collect()
}

/// The delimiter: `given` (one character), else the candidate the header line holds most of
/// (a comma when it holds none).
pub fn delimiter(text: &str, given: Option<&str>) -> Result<u8, String> {
    if let Some(d) = given {
        return match d.as_bytes() {
            [b] if b.is_ascii() && *b != b'"' && *b != b'\n' => Ok(*b),
            _ => Err(format!("delimiter {d:?}: expected one character such as \",\" or \";\"")),
        };
    }
    let header = text.lines().next().unwrap_or("");
    let count = |d: u8| header.bytes().filter(|b| *b == d).count();
    Ok(DELIMITERS.iter().copied().max_by_key(|d| (count(*d), *d == b',')).filter(|d| count(*d) > 0).unwrap_or(b','))
}

/// A quote that opens a field and never closes swallows the rest of the file: refused naming
/// where it opened.
pub fn check_quotes(text: &str, delimiter: u8) -> Result<(), String> {
    let (mut open_at, mut field_start, mut line, mut column) = (None, true, 1usize, 0usize);
    let mut bytes = text.bytes().peekable();
    while let Some(b) = bytes.next() {
        column += 1;
        match (open_at, b) {
            (None, b'"') if field_start => open_at = Some((line, column)),
            (Some(_), b'"') if bytes.peek() == Some(&b'"') => {
                bytes.next();
                column += 1;
            }
            (Some(_), b'"') => open_at = None,
            _ => {}
        }
        if b == b'\n' {
            (line, column) = (line + 1, 0);
        }
        field_start = open_at.is_none() && (b == delimiter || b == b'\n' || (field_start && b == b'\r'));
    }
    match open_at {
        Some((l, c)) => Err(format!("an unterminated quote: the field opened at line {l}, column {c} never closes")),
        None => Ok(()),
    }
}

/// Column names must be there and differ.
pub fn check_names(names: &[String]) -> Result<(), String> {
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(format!("CSV header: column {} has no name", i + 1));
    }
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|m| m == n) {
            return Err(format!("CSV header: columns {} and {} are both named `{n}`", j + 1, i + 1));
        }
    }
    Ok(())
}

/// A CSV reading error in words, naming the file's line.
pub fn describe(e: &csv::Error, header_len: usize) -> String {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::UnequalLengths { len, .. } => format!(
            "CSV line {line}: {len} field(s) where the header has {header_len} (a missing or extra delimiter, or a \
             quote left open on an earlier line?)"
        ),
        _ => format!("CSV line {line}: {e}"),
    }
}

/// What a CSV file holds, as far as a check reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The delimiter it is read with.
    pub delimiter: u8,
    /// The header's column names.
    pub columns: Vec<String>,
    /// Data rows.
    pub rows: usize,
}

/// A CSV text opened for its records, its header read and checked.
#[derive(Debug)]
pub struct Opened<'t> {
    /// The records after the header (trimmed).
    pub reader: csv::Reader<&'t [u8]>,
    /// The delimiter given or sniffed.
    pub delimiter: u8,
    /// The column names: the header's (checked: there and unique), or numbered.
    pub columns: Vec<String>,
}

/// Opens decoded CSV text as `options` say: the delimiter given or sniffed, quotes closed, the
/// header row read (or columns numbered when `header` is false) and its names checked.
pub fn open<'t>(text: &'t str, options: Options<'_>) -> Result<Opened<'t>, String> {
    let delimiter = delimiter(text, options.delimiter)?;
    check_quotes(text, delimiter)?;
    let header = options.header.unwrap_or(true);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(header)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let first: Vec<String> = reader.headers().map_err(|e| describe(&e, 0))?.iter().map(str::to_owned).collect();
    let columns = if header { first } else { numbered(first.len()) };
    check_names(&columns)?;
    Ok(Opened { reader, delimiter, columns })
}

/// Reads the whole file as ingest would, keeping only its shape: UTF-8, the delimiter given or
/// sniffed, quotes closed, column names there and unique, every row as wide as the header, and
/// each of `named` (a parameter and the column it names) a column of the header.
pub fn check(bytes: &[u8], options: Options<'_>, named: &[(&str, &str)]) -> Result<Shape, String> {
    let text = decode(bytes, options.encoding)?;
    let Opened { mut reader, delimiter, columns } = open(&text, options)?;
    let mut rows = 0;
    for record in reader.records() {
        record.map_err(|e| describe(&e, columns.len()))?;
        rows += 1;
    }
    for (param, column) in named {
        if !columns.iter().any(|c| c == column) {
            let with = if delimiter == b',' {
                String::new()
            } else {
                format!(" (read with delimiter {:?})", delimiter as char)
            };
            return Err(format!(
                "{param} `{column}` is not a column of the CSV (columns: {}){with}",
                columns.join(", ")
            ));
        }
    }
    Ok(Shape { delimiter, columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_s_shape_and_its_refusals() {
        let shape = check(b"a;b;species\n1;2;x\n", Options::default(), &[("target", "species")]).unwrap();
        assert_eq!((shape.delimiter, shape.columns.len(), shape.rows), (b';', 3, 1));
        assert_eq!(
            check(b"a,b\n1,2\n", Options::default(), &[("target", "species")]).unwrap_err(),
            "target `species` is not a column of the CSV (columns: a, b)"
        );
        assert!(
            check(b"a,b\n1,2,3\n", Options::default(), &[])
                .unwrap_err()
                .starts_with("CSV line 2: 3 field(s) where the header has 2")
        );
    }
}
