package cache

import (
	"encoding/binary"
	"hash/crc32"
)

// An entry file is a header followed by the payload:
//
//	0   4  magic "rgfc"
//	4   4  CRC-32C (Castagnoli) of the entry's relative path, then the payload, little endian
//	8   8  payload length, little endian
//	16  …  payload
//
// Hashing the path too means a file copied or renamed to another key's name is a miss.
const headerSize = 16

const magic = "rgfc"

// checksum is the CRC-32C of rel followed by payload.
func checksum(rel string, payload []byte) uint32 {
	tab := crc32.MakeTable(crc32.Castagnoli)
	return crc32.Update(crc32.Checksum([]byte(rel), tab), tab, payload)
}

// header returns the header of an entry with this path and payload.
func header(rel string, payload []byte) []byte {
	h := make([]byte, headerSize)
	copy(h, magic)
	binary.LittleEndian.PutUint32(h[4:], checksum(rel, payload))
	binary.LittleEndian.PutUint64(h[8:], uint64(len(payload)))
	return h
}

// decode checks a whole entry file read from rel and returns its payload; ok is false for a
// torn, truncated or corrupted file.
func decode(rel string, file []byte) (payload []byte, ok bool) {
	if len(file) < headerSize || string(file[:4]) != magic {
		return nil, false
	}
	payload = file[headerSize:]
	if binary.LittleEndian.Uint64(file[8:]) != uint64(len(payload)) {
		return nil, false
	}
	if binary.LittleEndian.Uint32(file[4:]) != checksum(rel, payload) {
		return nil, false
	}
	return payload, true
}
