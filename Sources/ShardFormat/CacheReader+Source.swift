import Foundation

/// Where a cache's shard files come from when they are not all local when the cache is opened:
/// a remote cache whose shards are fetched on demand into a local directory.
///
/// ``CacheReader`` calls these from any thread that reads, one call per shard at a time.
public protocol ShardSource: AnyObject, Sendable {
    /// The last bytes of shard `index` (manifest file name `name`, `size` bytes as the manifest
    /// says): at least its footer and its 40-byte trailer, at most the whole file.
    func tail(shard index: Int, name: String, size: Int) throws -> [UInt8]
    /// A local path of the whole shard, already checked against the manifest's size and checksum.
    func fetch(shard index: Int, name: String) throws -> String
    /// The reader no longer maps shard `index`: the source may evict its file.
    func release(shard index: Int, name: String)
}

/// One shard of an open cache: its footer's layout always, its mapping while it is open.
final class ShardSlot: @unchecked Sendable {
    // Sendable because `reader` and `lastUse` change only under the owning CacheReader's shardLock.
    let index: Int
    let name: String
    let path: String
    let layout: ShardLayout
    let footerChecksum: UInt64
    var reader: ShardReader?
    var lastUse = 0
    /// Held while the shard is fetched and mapped, so one thread fetches it once.
    let opening = NSLock()

    init(index: Int, name: String, path: String, layout: ShardLayout, footerChecksum: UInt64) {
        self.index = index
        self.name = name
        self.path = path
        self.layout = layout
        self.footerChecksum = footerChecksum
    }
}

extension CacheReader {
    /// Shards mapped now (all of them without a source).
    public var openShardCount: Int {
        shardLock.lock()
        defer { shardLock.unlock() }
        return slots.filter { $0.reader != nil }.count
    }

    /// The mapped reader of shard `s`, fetched through the source and mapped if it is not open.
    /// Before a fetch, the least recently read shards are released until this one and those
    /// being opened by other threads fit `openShards`.
    func shard(_ s: Int) throws -> ShardReader {
        let slot = slots[s]
        shardLock.lock()
        shardTick += 1
        slot.lastUse = shardTick
        if let r = slot.reader {
            shardLock.unlock()
            return r
        }
        shardLock.unlock()
        guard let source else { throw ShardFormatError.invalidInput("shard \(slot.name) is not open") }
        slot.opening.lock()
        defer { slot.opening.unlock() }
        shardLock.lock()
        if let other = slot.reader {
            shardLock.unlock()
            return other   // another thread mapped it while this one waited
        }
        // Room first: the source may need the space of a released shard for this one's file.
        var open = slots.filter { $0.reader != nil }
        var released: [ShardSlot] = []
        while open.count + openingCount >= openShards, let old = open.indices.min(by: { open[$0].lastUse < open[$1].lastUse }) {
            // Blocks decoded from it keep their own reference, so reads in flight stay valid.
            open[old].reader = nil
            released.append(open.remove(at: old))
        }
        openingCount += 1
        shardLock.unlock()
        for o in released { source.release(shard: o.index, name: o.name) }
        defer {
            shardLock.lock()
            openingCount -= 1
            shardLock.unlock()
        }
        let r = try fetchAndMap(slot, from: source)
        shardLock.lock()
        slot.reader = r
        shardLock.unlock()
        return r
    }

    /// Fetches `slot`'s file and maps it. A file that vanished before it was mapped (another
    /// process sharing the source's directory evicted it) is fetched again, twice at most.
    private func fetchAndMap(_ slot: ShardSlot, from source: ShardSource) throws -> ShardReader {
        var attempt = 0
        while true {
            attempt += 1
            let path = try source.fetch(shard: slot.index, name: slot.name)
            do { return try map(slot, path: path) } catch {
                source.release(shard: slot.index, name: slot.name)
                if case ShardFormatError.system(_, "open", ENOENT) = error, attempt < 3 { continue }
                throw error
            }
        }
    }

    /// Maps the fetched file of `slot` and checks it is the shard whose footer was read at open.
    private func map(_ slot: ShardSlot, path: String) throws -> ShardReader {
        let r = try ShardReader(path: path)
        let size = manifest.shards[slot.index].bytes
        guard r.bytes.count == size else {
            throw ShardFormatError.mismatch(file: path, reason: "size \(r.bytes.count) bytes, manifest says \(size)")
        }
        guard r.footerChecksum == slot.footerChecksum else {
            throw ShardFormatError.mismatch(file: path, reason: "footer differs from the one read when the cache was opened (the shard changed?)")
        }
        return r
    }
}
