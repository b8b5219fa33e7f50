//! Which fields a response actually carries, read from its wire encoding and named from the compiled
//! contract. proto3 leaves default values out of the encoding, so a field number on the wire is a field
//! with a value; naming it from the descriptor means a field added to the contract later is caught by
//! the same test without anyone updating a list.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// The message `fedx.v1.{name}` from the compiled contract.
pub fn message_descriptor(name: &str) -> DescriptorProto {
    let set =
        FileDescriptorSet::decode(fedx_proto::v1::FILE_DESCRIPTOR_SET).expect("embedded descriptor set");
    set.file
        .into_iter()
        .filter(|f| f.package() == "fedx.v1")
        .flat_map(|f| f.message_type)
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no message fedx.v1.{name}"))
}

/// Names of the fields of `message` (a `fedx.v1.{type_name}`) that carry a value, top level only.
pub fn fields_present<M: Message>(message: &M, type_name: &str) -> BTreeSet<String> {
    let descriptor = message_descriptor(type_name);
    field_numbers(&message.encode_to_vec())
        .into_iter()
        .map(|number| {
            descriptor
                .field
                .iter()
                .find(|f| f.number() == number as i32)
                .map(|f| f.name().to_owned())
                .unwrap_or_else(|| panic!("field {number} is not in fedx.v1.{type_name}"))
        })
        .collect()
}

/// Field numbers present in an encoded message (top level).
pub fn field_numbers(mut bytes: &[u8]) -> BTreeSet<u32> {
    let mut numbers = BTreeSet::new();
    while !bytes.is_empty() {
        let key = prost::encoding::decode_varint(&mut bytes).expect("well-formed key");
        let number = (key >> 3) as u32;
        numbers.insert(number);
        match key & 7 {
            0 => {
                prost::encoding::decode_varint(&mut bytes).expect("varint");
            }
            1 => bytes = &bytes[8..],
            2 => {
                let len = prost::encoding::decode_varint(&mut bytes).expect("length") as usize;
                bytes = &bytes[len..];
            }
            5 => bytes = &bytes[4..],
            other => panic!("unexpected wire type {other}"),
        }
    }
    numbers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_fields_are_the_non_default_ones() {
        let employment = fedx_proto::v1::Employment {
            employer_usci: "91530100MA6K000000".into(),
            months: 3,
            ..Default::default()
        };
        assert_eq!(
            fields_present(&employment, "Employment"),
            BTreeSet::from(["employer_usci".to_owned(), "months".to_owned()])
        );
        assert!(fields_present(&fedx_proto::v1::Employment::default(), "Employment").is_empty());
    }
}
