//! Views of device buffers: a buffer, an element offset and a length.
//!
//! ZeRO works on slices of one flat buffer, so every operation takes views rather than whole
//! buffers. Making a view never fails; the checked front door ([`crate::Device`]) validates it
//! against its buffer when it is used, and names the argument if it runs past the end.

use crate::dtype::DType;
use std::ops::Range;

/// What every backend's buffer type tells the generic layer about itself.
pub trait DeviceBuffer: Send + Sync {
    /// The element type.
    fn dtype(&self) -> DType;
    /// The number of elements.
    fn len(&self) -> usize;
    /// Whether the buffer holds no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A read-only view `[start, end)` of a buffer, in elements.
#[derive(Debug)]
pub struct Slice<'a, T: ?Sized> {
    buf: &'a T,
    start: usize,
    end: usize,
}

impl<T: ?Sized> Clone for Slice<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Slice<'_, T> {}

impl<'a, T: DeviceBuffer + ?Sized> Slice<'a, T> {
    /// A view of `range` of `buf` (validated where it is used).
    pub fn new(buf: &'a T, range: Range<usize>) -> Self {
        Slice {
            buf,
            start: range.start,
            end: range.end,
        }
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &'a T {
        self.buf
    }

    /// The first element of the view.
    pub fn offset(&self) -> usize {
        self.start
    }

    /// One past the last element of the view.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The number of elements (0 for an inverted range, which validation rejects).
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer's dtype.
    pub fn dtype(&self) -> DType {
        self.buf.dtype()
    }

    /// A sub-view, relative to this view's start.
    pub fn sub(&self, range: Range<usize>) -> Self {
        Slice {
            buf: self.buf,
            start: self.start + range.start,
            end: self.start + range.end,
        }
    }
}

/// A writable view `[start, end)` of a buffer, in elements.
#[derive(Debug)]
pub struct SliceMut<'a, T: ?Sized> {
    buf: &'a mut T,
    start: usize,
    end: usize,
}

impl<'a, T: DeviceBuffer + ?Sized> SliceMut<'a, T> {
    /// A writable view of `range` of `buf` (validated where it is used).
    pub fn new(buf: &'a mut T, range: Range<usize>) -> Self {
        SliceMut {
            buf,
            start: range.start,
            end: range.end,
        }
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &T {
        self.buf
    }

    /// The underlying buffer, writable.
    pub fn buffer_mut(&mut self) -> &mut T {
        self.buf
    }

    /// The first element of the view.
    pub fn offset(&self) -> usize {
        self.start
    }

    /// One past the last element of the view.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The number of elements (0 for an inverted range, which validation rejects).
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer's dtype.
    pub fn dtype(&self) -> DType {
        self.buf.dtype()
    }

    /// Gives up the view for a borrow of the whole buffer with the view's lifetime (backends
    /// use it to reach their memory).
    pub fn into_buffer(self) -> &'a mut T {
        self.buf
    }

    /// A read-only view of the same range.
    pub fn as_ref(&self) -> Slice<'_, T> {
        Slice {
            buf: self.buf,
            start: self.start,
            end: self.end,
        }
    }

    /// A shorter-lived writable view of the same range, so a view can be passed on and used
    /// again.
    pub fn reborrow(&mut self) -> SliceMut<'_, T> {
        SliceMut {
            buf: self.buf,
            start: self.start,
            end: self.end,
        }
    }

    /// A writable sub-view, relative to this view's start.
    pub fn sub(&mut self, range: Range<usize>) -> SliceMut<'_, T> {
        SliceMut {
            buf: self.buf,
            start: self.start + range.start,
            end: self.start + range.end,
        }
    }
}

/// Convenience constructors for views, available on every backend's buffer type.
pub trait BufferExt: DeviceBuffer {
    /// The whole buffer.
    fn all(&self) -> Slice<'_, Self> {
        Slice::new(self, 0..self.len())
    }
    /// A range of the buffer.
    fn range(&self, range: Range<usize>) -> Slice<'_, Self> {
        Slice::new(self, range)
    }
    /// The whole buffer, writable.
    fn all_mut(&mut self) -> SliceMut<'_, Self> {
        let len = self.len();
        SliceMut::new(self, 0..len)
    }
    /// A range of the buffer, writable.
    fn range_mut(&mut self, range: Range<usize>) -> SliceMut<'_, Self> {
        SliceMut::new(self, range)
    }
}

impl<T: DeviceBuffer + ?Sized> BufferExt for T {}
